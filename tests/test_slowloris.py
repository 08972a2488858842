"""A many-address slowloris against the rendered relay (real Postfix): while 60 addresses hold
every session they may, a legitimate sender from another address is still accepted. Nothing
here asserts a time: the sender gets a bounded number of attempts (a sender's retries,
compressed), and the attack is checked to be really holding sessions."""
from lab.slowloris import Attack, legit_wait
from tests.helpers import ids_at

ADDRESSES = [f"127.0.20.{i}" for i in range(1, 61)]


def test_a_legitimate_sender_gets_through_a_many_address_slowloris(lab, vm_files):
    assert "smtpd_client_connection_count_limit = 1" in vm_files["main.cf"]
    primary = lab.sink()
    relay = lab.relay(primary.port)
    attack = Attack(relay.port, ADDRESSES, per_source=3, trickle_s=5, max_seconds=400).start()
    try:
        assert attack.wait_holding(50, 180), attack.holding  # the attack is real: 50+ sessions trickling DATA
        wait, attempts = legit_wait(relay.port, "127.0.31.1", "legit-during-attack", limit_s=240)
        held = attack.holding
    finally:
        attack.end()
    assert wait is not None, f"no acceptance in {attempts} attempts while {held} sessions were held"
    relay.wait_queue_empty(120)
    assert ids_at(primary)["legit-during-attack"] == 1
