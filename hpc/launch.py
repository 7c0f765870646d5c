"""Compatibility re-export, to be removed once hpc.cluster imports from hpc.profile: `load_profile` here
returns a profile's SlurmSettings (hpc.profile.load_slurm), as it did before the split into hpc.profile,
hpc.scheduler and hpc.launcher."""

from hpc.profile import load_slurm as load_profile

__all__ = ["load_profile"]
