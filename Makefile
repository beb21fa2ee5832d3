# Set-up lives here once: `make demo` and `make test` work on a fresh machine (no ROS needed:
# `make test` then skips the ROS tests with one line saying how to enable them).
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned first so pip takes the CPU build instead of several GB of CUDA wheels;
# numpy<2 because nuscenes-devkit and cv_bridge need it.
$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0" "numpy<2"
	$(PY) -m pip install -q -e ".[all,test]"
	touch $@

.PHONY: install demo test
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/fastdrivevla demo --out out/demo

# the ROS-free suite, then the ROS 2 tests for real (colcon build + colcon test, launch tests
# included) on whichever ROS 2 test/ros_tests.sh finds
test: $(VENV)/.installed
	$(PY) -m pytest -q test
	bash test/ros_tests.sh $(VENV)
