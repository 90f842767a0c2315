"""Both sides of the API/sessions seam implement the one contract, app.sessions.contract.Sessions:
every method, with the contract's signature (the API's tests then run on both, in one process and
with --workers)."""

import inspect

import pytest

from app.sessions.contract import CALLS, Sessions
from app.sessions.remote import RemoteSessions
from app.sessions.service import SessionService


@pytest.mark.parametrize("implementation", [SessionService, RemoteSessions])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_each_method_of_the_contract_is_implemented_with_its_signature(implementation, name):
    declared, found = getattr(Sessions, name), getattr(implementation, name)
    assert found is not declared, f"{implementation.__name__}.{name} is the contract's stub"
    assert inspect.signature(found).parameters == inspect.signature(declared).parameters
    if inspect.iscoroutinefunction(declared):
        assert inspect.iscoroutinefunction(found)


def test_the_contract_documents_every_method_and_names_where_a_chunk_enters():
    for name in CALLS:
        assert inspect.getdoc(getattr(Sessions, name)), name
    assert {"submit", "sequence"} <= CALLS and "push" not in CALLS
    assert Sessions in SessionService.__mro__ and Sessions in RemoteSessions.__mro__
