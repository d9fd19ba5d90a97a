"""``python -m funcnet`` is the same command line as ``funcnet``."""

import pytest
import subprocess
import sys


@pytest.mark.slow
def test_python_dash_m_funcnet_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "funcnet", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "gradcheck" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "funcnet", "no-such-command"], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
