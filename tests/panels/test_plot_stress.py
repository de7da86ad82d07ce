"""Draw a pyqtgraph plot for a while: PySide6 6.12.0 on Python 3.11 crashed doing this.

The crash (a reference-counting bug in QPainter.drawLine, hit by pyqtgraph's axis drawing)
kills the interpreter, so this test runs the drawing in a child process and checks it
comes back alive.
"""

import subprocess
import sys
import textwrap


def test_plot_drawing_for_a_while_does_not_crash():
    code = textwrap.dedent("""
        import os, time
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        import numpy as np, pyqtgraph as pg
        from PySide6.QtWidgets import QApplication
        app = QApplication([])
        w = pg.PlotWidget()
        w.resize(800, 400)
        curve = w.plot()
        t0 = time.time(); frames = 0
        while time.time() - t0 < 4:
            n = 100 + frames * 20
            curve.setData(np.arange(n), np.sin(np.arange(n) / 10.0) * frames)
            w.grab()
            frames += 1
        print("frames", frames)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) > 10
