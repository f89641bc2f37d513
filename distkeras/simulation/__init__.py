"""Training in virtual time: hundreds of workers on one machine, on a modelled network.

A trainer with ``simulate=`` runs its real update rule, exchanges, parameter server,
coordinator and data split, with the workers simulated as threads taking turns on one compiled
replica (``run``), messages carried in virtual time (``exchanges``) over an α–β network
(``network``), and each window's compute time from a measured or given step time with
stragglers (``timing``), all ordered by a discrete-event clock (``clock``). The study's
``--simulate`` (``distkeras.study``) uses it for the scaling figures past this machine's cores.

Example::

    from distkeras.trainers import ADPSGD
    fitted = ADPSGD(model, num_workers=64, simulate="10gbit:0.1ms").fit(df)
    fitted.history["epoch_seconds"]        # virtual seconds per epoch
    fitted.history.simulation              # the network and the time model it used
"""
from distkeras.simulation.network import Network
from distkeras.simulation.run import Simulation
from distkeras.simulation.timing import TimeModel

__all__ = ["Network", "Simulation", "TimeModel"]
