"""What one worker of a stage asks the cluster for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    """CPUs and GPUs for one worker of a stage.

    ``gpus`` asks for a (possibly fractional) number of GPUs; ``gpu_memory_gb`` asks for a share
    of one GPU sized by memory, which the backend turns into a fraction of the node's card. The
    two are alternatives, so giving both is an error rather than a silent choice.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    gpu_memory_gb: float = 0.0

    def __post_init__(self) -> None:
        for field_name in ("cpus", "gpus", "gpu_memory_gb"):
            value = getattr(self, field_name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"Resources.{field_name} must be a number >= 0, got {value!r}"
                )
        if self.gpus > 0 and self.gpu_memory_gb > 0:
            raise ValueError(
                "Resources: set either gpus or gpu_memory_gb, not both "
                f"(got gpus={self.gpus}, gpu_memory_gb={self.gpu_memory_gb})"
            )
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ValueError(
                f"Resources.gpus above 1 must be a whole number, got {self.gpus}"
            )

    @property
    def requires_gpu(self) -> bool:
        return self.gpus > 0 or self.gpu_memory_gb > 0

    def gpus_for(self, gpu_memory_gb_per_gpu: float | None) -> float:
        """The GPU count to request from Ray, given the memory of one card on the node.

        Without a known card size a memory request takes a whole GPU: over-asking waits, while
        under-asking runs out of device memory mid-run.
        """
        if self.gpus > 0:
            return self.gpus
        if self.gpu_memory_gb <= 0:
            return 0.0
        if not gpu_memory_gb_per_gpu:
            return 1.0
        return min(1.0, round(self.gpu_memory_gb / gpu_memory_gb_per_gpu, 4))
