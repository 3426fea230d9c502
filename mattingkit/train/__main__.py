"""``python -m mattingkit.train ARGS`` (and ``accelerate launch -m mattingkit.train ARGS``) is
``mattingkit train ARGS``: the same parser and entry point (:func:`mattingkit.cli.main`)."""
import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
