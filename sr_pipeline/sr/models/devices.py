"""The one place that turns a device choice (``auto``, ``cpu``, ``cuda[:N]``) into a device, and a
device into the label recorded in training.json, reports and benchmark tables.

Torch is imported inside the functions, so callers in light modules stay light.
"""

from __future__ import annotations


class DeviceUnavailable(ValueError):
    """``cuda`` was asked for on a machine without a usable GPU."""


def resolve_device(choice: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda[:N]`` is refused without one."""
    import torch

    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"device {choice!r} was asked for but no CUDA GPU is available; use --device cpu or auto")
        return choice
    if choice == "cpu":
        return "cpu"
    raise DeviceUnavailable(f"unknown device {choice!r}: use auto, cpu or cuda[:N]")


def device_label(device) -> str:
    """``cuda:0 (NVIDIA H100 ...)`` on a GPU, ``cpu (2 threads)`` on the CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
