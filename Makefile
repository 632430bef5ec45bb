# Two commands on a fresh machine:  `make demo`  and  `make test`  (each installs first).
PYTHON ?= python3
STAMP := .installed.stamp

.PHONY: install demo test bench clean asan

install: $(STAMP)

$(STAMP): setup.py requirements.txt $(wildcard custom_ops/*.cc custom_ops/*.h)
	$(PYTHON) -m pip install --upgrade pip "setuptools>=70" wheel
	$(PYTHON) -m pip install -r requirements.txt
	$(PYTHON) -m pip install --no-build-isolation --no-deps -e .
	$(PYTHON) -c "import rcnn_zoo.ops as o; print('rcnn_zoo ops:', o.implementation(), o.fallback_reason() or '')"
	touch $(STAMP)

demo: install
	$(PYTHON) -m rcnn_zoo.cli demo --output demo_detections.png

test: install
	$(PYTHON) -m pytest -q tests

bench: install
	$(PYTHON) benchmarks/bench_ops.py

clean:
	rm -rf build *.egg-info $(STAMP) rcnn_zoo/ops/_rcnn_zoo_ops*.so

# AddressSanitizer build of custom_ops/ in a temp dir + the op tests against it (not part of CI).
asan:
	PYTHON=$(PYTHON) bash tools/asan_kernels.sh
