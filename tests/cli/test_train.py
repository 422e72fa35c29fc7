from foundry_ext.commands.train import train
from tests.conftest import DEMO_YAML, SMALL_CORPUS


def test_train_reports_checkpoints_metrics_and_plot(tmp_path, capsys):
    run_dir = tmp_path / 'run'
    trainer = train(DEMO_YAML, [f'variables.run_dir={run_dir}', 'max_duration=12ba', 'scheduler.t_warmup=2ba',
                                'scheduler.t_decay=4ba', 'save_interval=6ba', 'eval_interval=12ba',
                                'eval_subset_num_batches=1', 'python_log_level=null', SMALL_CORPUS,
                                'eval_loader.dataset.train_tokens=400000'])
    trainer.close()
    out = capsys.readouterr().out
    assert f'checkpoints: {run_dir}/checkpoints (2 checkpoints, newest: ep0-ba12-rank0.pt)' in out
    assert (run_dir / 'checkpoints' / 'ep0-ba12-rank0.pt').exists()
    assert f'metrics: {run_dir}/metrics.jsonl' in out
    png = run_dir / 'lr_loss.png'
    assert f'LR/loss plot: {png}' in out and png.stat().st_size > 10_000


def test_the_summary_fills_composer_placeholders_in_save_folder(tmp_path, capsys):
    run_dir = tmp_path / 'run'
    trainer = train(DEMO_YAML, [f'variables.run_dir={run_dir}', 'max_duration=4ba', 'scheduler.t_warmup=1ba',
                                'scheduler.t_decay=2ba', 'save_interval=4ba', 'eval_loader=null', 'eval_interval=1',
                                'python_log_level=null', SMALL_CORPUS, f'save_folder={run_dir}/{{run_name}}/r{{rank}}'])
    trainer.close()
    assert f'checkpoints: {run_dir}/wsd-demo/r0 (1 checkpoints, newest: ep0-ba4-rank0.pt)' in capsys.readouterr().out
