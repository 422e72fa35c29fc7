import matplotlib.image as mpimg
from typer.testing import CliRunner

from foundry_ext.cli.main import app
from tests.conftest import DEMO_YAML


def test_plot_schedule_writes_a_readable_png(tmp_path):
    out = tmp_path / 'lr.png'
    result = CliRunner().invoke(app, ['plot-schedule', DEMO_YAML, '--max-duration', '400ba,800ba', '-o', str(out),
                                      '--compare-cosine', 'scheduler.t_decay=80ba', 'optimizer.lr=1e-3'])
    assert result.exit_code == 0, result.output
    image = mpimg.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 600 and image.std() > 0.01


def test_plot_schedule_reports_bad_yaml_values(tmp_path):
    result = CliRunner().invoke(app, ['plot-schedule', DEMO_YAML, '-m', '100ba', '-o', str(tmp_path / 'x.png'),
                                      'scheduler.t_decay=0.2dur'])
    assert result.exit_code == 2
    assert "error: scheduler.t_decay='0.2dur'" in result.output


def test_plot_schedule_needs_a_run_length(tmp_path):
    result = CliRunner().invoke(app, ['plot-schedule', DEMO_YAML, '-m', ',', '-o', str(tmp_path / 'x.png')])
    assert result.exit_code == 2 and 'names no run length' in result.output
    assert not (tmp_path / 'x.png').exists()
