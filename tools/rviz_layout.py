# Copyright 2026 The fastdrivevla_ros Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
Write the dock layout of rviz/drive.rviz (its `QMainWindow State`), reproducibly.

RViz restores its docks from Qt's QMainWindow::saveState() blob, matched by object name (RViz
names each dock after its display). This builds a Qt window with the same dock names, arranges
them, and writes the blob into the .rviz file:
  - top, full width: the 3D view (top-down, forward up);
  - bottom, tall: Displays and Views tabbed on the left (Displays in front), and beside them
    the 2x3 token mosaic, large, with the six per-camera heatmaps as tabs behind it (in the
    mosaic's order; their displays are off by default: ticking one shows it as a tab).

Needs PyQt5 for Qt 5 (Debian: apt-get install python3-pyqt5) and a display (Xvfb is fine):
  DISPLAY=:99 /usr/bin/python3 tools/rviz_layout.py rviz/drive.rviz
"""

import re
import sys

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QApplication, QDockWidget, QLabel, QMainWindow

WIDTH, HEIGHT = 1600, 1000          # the Window Geometry of drive.rviz
LEFT_WIDTH, BOTTOM_HEIGHT = 330, 520
MOSAIC = 'Token mosaic'
HEATMAPS = [f'Heatmap {cam}' for cam in ('CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT',
                                          'CAM_BACK_LEFT', 'CAM_BACK', 'CAM_BACK_RIGHT')]


def layout_state() -> str:
    """Return the hex QMainWindow state of the layout described above."""
    app = QApplication(sys.argv[:1])
    window = QMainWindow()
    window.setCentralWidget(QLabel('3D view'))
    window.resize(WIDTH, HEIGHT)

    def dock(name: str, area) -> QDockWidget:
        widget = QDockWidget(name)
        widget.setObjectName(name)          # what RViz names the dock (its display's name)
        widget.setWidget(QLabel(name))
        window.addDockWidget(area, widget)
        return widget

    displays = dock('Displays', Qt.BottomDockWidgetArea)
    mosaic = dock(MOSAIC, Qt.BottomDockWidgetArea)
    window.splitDockWidget(displays, mosaic, Qt.Horizontal)
    window.tabifyDockWidget(displays, dock('Views', Qt.BottomDockWidgetArea))
    for name in HEATMAPS:
        window.tabifyDockWidget(mosaic, dock(name, Qt.BottomDockWidgetArea))
    window.show()
    displays.raise_()
    mosaic.raise_()
    app.processEvents()
    window.resizeDocks([displays], [LEFT_WIDTH], Qt.Horizontal)
    app.processEvents()
    window.resizeDocks([mosaic], [BOTTOM_HEIGHT], Qt.Vertical)
    app.processEvents()
    return bytes(window.saveState().toHex()).decode()


def main(path: str) -> None:
    text = open(path).read()
    line = f'  QMainWindow State: {layout_state()}\n'
    if 'QMainWindow State:' in text:
        text = re.sub(r'  QMainWindow State: [0-9a-f]*\n', line, text)
    else:
        text = text.replace('Window Geometry:\n', 'Window Geometry:\n' + line)
    open(path, 'w').write(text)


if __name__ == '__main__':
    main(sys.argv[1])
