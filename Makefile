# The front door: `make demo` and `make test` (both run `make install` first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The test broker listens on its own port so that a demo broker (9092) can run beside it.
TEST_KAFKA_PORT ?= 19092
DEMO_ARGS ?=

.PHONY: install demo test test-unit broker broker-stop clean

install: $(VENV)/.installed deploy/kafka/lib/.fetched

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

deploy/kafka/lib/.fetched: deploy/kafka/pom.xml
	bash deploy/kafka/broker.sh fetch
	touch $@

demo: install
	mkdir -p out
	$(BIN)/streamer demo --summary-json out/demo-summary.json $(DEMO_ARGS)

# Starts the real broker, runs every test (broker tests included), stops the broker.
test: install
	bash deploy/kafka/broker.sh start --port $(TEST_KAFKA_PORT)
	status=0; STREAMER_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) STREAMER_REQUIRE_KAFKA=1 \
	  $(BIN)/python -m pytest -q tests || status=$$?; \
	  bash deploy/kafka/broker.sh stop --port $(TEST_KAFKA_PORT); exit $$status

# Unit tests only: no broker.
test-unit: install
	$(BIN)/python -m pytest -q -m "not kafka" tests

broker: deploy/kafka/lib/.fetched
	bash deploy/kafka/broker.sh start

broker-stop:
	bash deploy/kafka/broker.sh stop

clean:
	rm -rf $(VENV) out .pytest_cache deploy/kafka/lib deploy/kafka/target
