"""Everyday spam on real Postfix (lab/spam.py, scaled down; `make bench-spam` is the full run):
a dictionary attack while the primary is up, then an outage and the recovery. The primary is
real Postfix that refuses unknown recipients with 550 5.1.1 at RCPT; the relay runs the
rendered files and the rendered drain watcher as a service.

Junk the primary refuses stays queued (soft_bounce) and is Postfix's own backoff's, whose first
retry is after minimal_backoff_time (600 s): within this run each junk message reaches the
primary exactly once. The old watcher re-flushed the whole queue every 30 s while the primary
answered: the same scenario with 60 junk messages measured 46 re-attempts per junk message
per 10 minutes with it, which fails the equality below."""
from lab.spam import Scenario, run
from tests.helpers import lab_dir

SCALED = Scenario(junk=240, spam_seconds=40, after_seconds=45, outage_seconds=20, legit_every=5, sources=6)


def test_dictionary_attack_costs_one_attempt_per_junk_message_and_recovery_stays_fast(vm_files, tls_dir):
    base = lab_dir("spam")
    r = run("catchall", vm_files, tls_dir, base / "junk", SCALED)
    seen = "\n".join(r.watcher_lines[-8:])
    assert r.replies_5xx == 0 and r.dsns == 0
    assert r.junk_accepted == r.junk_sent == SCALED.junk  # the catch-all takes it, never 5xx
    # Each junk message reached the primary once: no watcher storm, no early Postfix retry.
    assert r.junk_rcpts_at_primary_up == r.junk_accepted, (r.junk_rcpts_at_primary_up, seen)
    assert r.outage_accepted == r.outage_sent > 0
    assert r.legit_missing == 0 and r.legit_duplicates == 0 and r.queue_after == 0, r
    # The recovery schedules the outage mail only, not the refused junk: the watcher says so.
    assert any("answers, flushing" in line and f"{SCALED.junk} refused by the primary" in line
               for line in r.watcher_lines), seen
    assert r.recovery_s is not None, seen
