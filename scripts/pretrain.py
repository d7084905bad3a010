"""Entry point for launchers: ``accelerate launch scripts/pretrain.py --config ... [key=value ...]`` or
``torchrun --nproc_per_node N scripts/pretrain.py ...``; the same as ``cavmae pretrain ...``."""

import sys
from pathlib import Path

# Run the checkout this script belongs to, even where another copy of cavmae is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cavmae.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
