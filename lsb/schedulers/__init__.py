"""diffusers-loadable schedulers (one SchedulerMixin + ConfigMixin class per file)."""

from .scheduling_lsb import LSBScheduler, LSBSchedulerOutput, config_base

__all__ = ["LSBScheduler", "LSBSchedulerOutput", "config_base"]

# paired-bridge schedulers (need the degraded endpoint x_T; see lsb.bridges.paired)
from .scheduling_dbim import DBIMScheduler, DBIMSchedulerOutput  # noqa: E402
from .scheduling_ddbm import DDBMScheduler, DDBMSchedulerOutput  # noqa: E402
from .scheduling_diffir import DiffIRScheduler, DiffIRSchedulerOutput  # noqa: E402  (DiffIR prior diffusion)
from .scheduling_ddm import DDMScheduler, DDMSchedulerOutput  # noqa: E402
from .scheduling_i2sb import I2SBScheduler, I2SBSchedulerOutput  # noqa: E402

__all__ += [
    "DBIMScheduler",
    "DBIMSchedulerOutput",
    "DDBMScheduler",
    "DDBMSchedulerOutput",
    "DiffIRScheduler",
    "DiffIRSchedulerOutput",
    "DDMScheduler",
    "DDMSchedulerOutput",
    "I2SBScheduler",
    "I2SBSchedulerOutput",
]
