"""Train a named leverjax experiment: ``python run.py --experiment=scheme5_6`` (see README.md)."""
from leverjax.cli import run

if __name__ == "__main__":
    run()
