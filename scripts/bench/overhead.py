"""Step-time overhead of all foundry-ext components versus plain LLM-Foundry, in paired alternating runs.

    python scripts/bench/overhead.py [--pairs 3] [--batches 60] [--out /tmp/overhead]

Prints the ratio foundry-ext / plain of median step times per pair, with its spread (see
foundry_ext.testing.benchmarking for what is timed).
"""

import argparse
import logging

from foundry_ext.data import build_byte_tokenizer, ensure_demo_corpus
from foundry_ext.testing.benchmarking import overhead_configs, paired_step_times

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--yaml', default='yamls/wsd.yaml')
    parser.add_argument('--pairs', type=int, default=3)
    parser.add_argument('--batches', type=int, default=60)
    parser.add_argument('--out', default='/tmp/foundry_ext_overhead')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    logging.getLogger('foundry_ext.testing.benchmarking').setLevel(logging.INFO)
    corpus = str(ensure_demo_corpus(build_byte_tokenizer(), 128))
    plain, ours = overhead_configs(args.yaml, args.out, corpus)
    run = [f'max_duration={args.batches}ba', 'python_log_level=warn', 'console_log_interval=100000ba',
           f'variables.run_dir={args.out}/run']
    result = paired_step_times(plain, run, ours, run, pairs=args.pairs)
    print(result.summary('plain Foundry (cosine_with_warmup)', 'foundry-ext (all components)'))
    print('ratios per pair:', ', '.join(f'{r:.4f}' for r in result.ratios))
