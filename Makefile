# The two commands the README starts with:
#   make demo   set everything up, start a local control plane + MariaDB, install the CRDs and a
#               sample, and run the operator in the foreground (Ctrl-C stops and cleans up)
#   make test   set everything up and run the whole test suite (unit, integration, e2e)
.PHONY: setup demo test unit lint

setup:
	@e2e/setup.sh

# DEMO_LINE=real (default): the real CoAI app 3.10.5, upgraded to 4.25.0 once Ready.
# DEMO_LINE=guide: the migration guide's 1.8.0 -> 2.0.0 on its stand-in app.
DEMO_LINE ?= real
demo: setup
	.venv/bin/python -m e2e.demo --line $(DEMO_LINE)

test: setup
	.venv/bin/pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

unit: setup
	.venv/bin/pytest tests/unit

lint: setup
	.venv/bin/ruff check operator tests e2e
