"""Entry point for launchers: ``accelerate launch scripts/finetune.py --config ... [key=value ...]`` or
``torchrun --nproc_per_node N scripts/finetune.py ...``; the same as ``cavmae finetune ...``."""

import sys
from pathlib import Path

# Run the checkout this script belongs to, even where another copy of cavmae is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cavmae.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
