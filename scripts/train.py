"""Train with LLM-Foundry, then print where the checkpoints, metrics and LR/loss plot went.

    composer scripts/train.py yamls/wsd.yaml [key=value overrides ...]
"""

import sys

from foundry_ext.commands.train import train

if __name__ == '__main__':
    train(sys.argv[1], sys.argv[2:])
