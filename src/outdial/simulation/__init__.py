"""Simulation: a virtual clock and a seeded call provider.

* :class:`VirtualClock` - time that moves only when told to;
* :class:`SimulatedProvider` - a deterministic provider whose calls end as a
  :class:`SimulationProfile` says (answer / voicemail / busy / failed mixes,
  ring and talk times, provider faults, duplicate and out-of-order delivery),
  with :meth:`SimulatedProvider.as_async` for asyncio runners;
* :class:`Constant`, :class:`Uniform`, :class:`LogNormal` - distributions of
  seconds for the profile.

Same seed, same run: nothing here reads the system clock or draws from a
global random generator.
"""

from __future__ import annotations

from outdial.simulation.clock import VirtualClock
from outdial.simulation.forecast import SimulationResult, sample_numbers, simulate
from outdial.simulation.provider import (
    AsyncSimulatedProvider,
    Constant,
    Distribution,
    LogNormal,
    SimulatedCall,
    SimulatedProvider,
    SimulationProfile,
    Uniform,
)

__all__ = [
    "AsyncSimulatedProvider",
    "Constant",
    "Distribution",
    "LogNormal",
    "SimulatedCall",
    "SimulatedProvider",
    "SimulationProfile",
    "SimulationResult",
    "Uniform",
    "VirtualClock",
    "sample_numbers",
    "simulate",
]
