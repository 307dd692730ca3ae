"""The operator-served console's authorisation, its pure half (model/console_auth.py): which object an
action is checked against, the review bodies, and that only an explicit ``allowed: true`` allows."""

from __future__ import annotations

import pytest
from kubeworkers_operator.model import console_auth as auth

NS = "team-a"


def test_a_job_behind_a_job_cr_is_checked_against_that_job() -> None:
    assert auth.target("retry", NS, "demo", f"{NS}/nightly") == auth.Target(NS, "jobs", "nightly")
    assert auth.target("cancel", NS, "demo", f"{NS}/nightly") == auth.Target(NS, "jobs", "nightly")


@pytest.mark.parametrize("job_id", ["3f2a9c", "other-ns/nightly", f"{NS}/"])
def test_an_sdk_job_or_one_naming_another_namespace_is_checked_against_the_pool(job_id: str) -> None:
    # "other-ns/nightly" must never be authorised by a right on other-ns's Job: the pool it is on decides.
    assert auth.target("retry", NS, "demo", job_id) == auth.Target(NS, "workerpools", "demo")


def test_a_replay_is_checked_against_the_pool() -> None:
    assert auth.target("replay", NS, "demo", None) == auth.Target(NS, "workerpools", "demo")
    assert auth.target("replay", NS, "demo", f"{NS}/x") == auth.Target(NS, "workerpools", "demo")


def test_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="not a console action"):
        auth.target("delete", NS, "demo", None)


def test_the_token_review_carries_the_token_and_nothing_else() -> None:
    assert auth.token_review("t0k") == {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                        "spec": {"token": "t0k"}}


def test_an_unauthenticated_review_refuses_without_echoing_the_apiserver_error() -> None:
    found = auth.identity_of({"status": {"authenticated": False, "error": "[invalid bearer token, issuer x]"}})
    assert isinstance(found, auth.Decision) and not found.allowed
    assert "did not authenticate" in found.reason and "issuer" not in found.reason
    assert isinstance(auth.identity_of({}), auth.Decision)
    assert isinstance(auth.identity_of({"status": {"authenticated": True, "user": {}}}), auth.Decision)


def test_the_access_review_asks_for_update_on_the_target_as_the_reviewed_user() -> None:
    who = auth.identity_of({"status": {"authenticated": True, "user": {
        "username": "system:serviceaccount:team-a:ops", "uid": "u1",
        "groups": ["system:serviceaccounts", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/pod-name": ["p"]}}}})
    assert isinstance(who, auth.Identity)
    body = auth.access_review(who, auth.Target(NS, "jobs", "nightly"))
    assert body["kind"] == "SubjectAccessReview"
    assert body["spec"] == {
        "user": "system:serviceaccount:team-a:ops", "uid": "u1",
        "groups": ["system:serviceaccounts", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/pod-name": ["p"]},
        "resourceAttributes": {"group": "workers.io", "resource": "jobs", "verb": "update",
                               "namespace": NS, "name": "nightly"},
    }


def test_reading_is_checked_as_a_list_of_the_namespaces_jobs_without_a_name() -> None:
    on = auth.read_target(NS)
    assert on == auth.Target(NS, "jobs", "", verb="list")
    body = auth.access_review(auth.Identity("bob"), on)
    assert body["spec"]["resourceAttributes"] == {"group": "workers.io", "resource": "jobs", "verb": "list",
                                                  "namespace": NS}
    assert auth.decide(auth.Identity("bob"), on, {"status": {}}).reason == \
        "bob may not list on jobs.workers.io team-a/*"


@pytest.mark.parametrize(("status", "allowed"), [
    ({"allowed": True}, True),
    ({"allowed": False}, False),
    ({"allowed": True, "denied": True}, False),
    ({"allowed": "true"}, False),  # only the boolean
    ({}, False),
])
def test_only_an_explicit_allowed_true_allows(status: dict[str, object], allowed: bool) -> None:
    who = auth.Identity("alice")
    on = auth.Target(NS, "workerpools", "demo")
    decision = auth.decide(who, on, {"status": status})
    assert decision.allowed is allowed and decision.who == "alice"
    if not allowed:
        assert decision.reason == "alice may not update on workerpools.workers.io team-a/demo"
