.PHONY: setup dev test lint bench-deps

setup:        ## create .venv and install everything
	scripts/setup

dev:          ## install, migrate, demo workspace + admin user, run web + worker + beat
	scripts/dev

test:         ## ruff + the whole test suite on PostgreSQL (and Redis for end-to-end tests)
	scripts/test

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports

bench-deps:   ## wrk for the webhook capacity benchmark (Debian package)
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
