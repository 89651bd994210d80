#!/usr/bin/env bash
# The README's command-line walkthrough; tests/cli.rs runs it on a real store.
set -euo pipefail

# snippet-start
# Stop the application first: the tool refuses a store another process has open.
export SESSIONDB_DIR=./sessions

sessiondb stats                          # sessions, users, disk, dead history
sessiondb list --user alice              # alice's devices, oldest first
sessiondb revoke --user alice            # sign alice out everywhere
sessiondb verify                         # checksums, then index consistency
sessiondb export --out backup.jsonl      # every live session, as JSON lines
sessiondb --dir ./restored import backup.jsonl   # same cookies keep working
sessiondb compact                        # drop the dead history from the log
# snippet-end
