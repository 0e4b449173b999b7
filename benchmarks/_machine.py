"""What every benchmark prints first: the command and the machine."""

import os
import platform
import sys

import torch


def header() -> None:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device}, torch {torch.__version__}"
    )
