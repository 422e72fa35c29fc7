"""The one JSON Lines writer and the atomic JSON file writer."""

import json
import os

from foundry_ext.core.jsonl import JSONLWriter, sync_open_writers, write_json


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replace_swaps_the_whole_file_and_later_writes_append_to_it(tmp_path):
    path = tmp_path / 'events.jsonl'
    writer = JSONLWriter(str(path), 'events')
    for step in range(3):
        writer.write({'step': step})
    writer.replace([{'step': 0}, {'step': 1, 'x': float('nan')}])
    writer.write({'step': 2})
    sync_open_writers()
    assert _lines(path) == [{'step': 0}, {'step': 1, 'x': 'nan'}, {'step': 2}]
    writer.close()
    sync_open_writers()  # a closed writer is left alone
    assert sorted(os.listdir(tmp_path)) == ['events.jsonl']


def test_write_json_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / 'sub' / 'budgets.json'
    write_json(str(path), [{'a': 1}])
    write_json(str(path), [{'a': 2, 'loss': float('inf')}])
    assert json.loads(path.read_text()) == [{'a': 2, 'loss': 'inf'}]
    assert os.listdir(path.parent) == ['budgets.json']


def test_a_resumed_run_drops_only_an_unfinished_last_line(tmp_path):
    path = tmp_path / 'm.jsonl'
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "lo')
    writer = JSONLWriter(str(path), 'metrics')
    writer.start_run(from_zero=False, restarted=False)
    writer.write({'step': 2})
    writer.close()
    assert _lines(path) == [{'step': 0}, {'step': 1}, {'step': 2}]
