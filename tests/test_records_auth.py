"""Sign-in configuration: bcrypt users with roles, OIDC providers for st.login, malformed entries refused."""
from __future__ import annotations

import pytest

from core import auth


def test_passwords_are_checked_against_bcrypt_hashes_with_roles():
    config = auth.config_from_secrets({"auth": {"users": {
        "ann": {"password_hash": auth.hash_password("correct horse")},
        "boss": {"password_hash": auth.hash_password("b0ss"), "role": "admin"},
        "broken": {"password_hash": "not-a-bcrypt-hash"}}}})
    assert config.enabled and not config.oidc_providers
    assert auth.check_password(config, "ann", "correct horse") == auth.User("ann", "user")
    assert auth.check_password(config, " boss ", "b0ss").is_admin
    assert auth.check_password(config, "ann", "Correct horse") is None
    assert auth.check_password(config, "nobody", "correct horse") is None
    assert auth.check_password(config, "broken", "anything") is None
    assert auth.check_password(config, "ann", "") is None
    assert auth.hash_password("x") != auth.hash_password("x")  # salted


def test_a_user_name_is_locked_after_five_wrong_passwords_for_fifteen_minutes():
    """Nothing limited password guesses."""
    from unittest import mock

    config = auth.config_from_secrets({"auth": {"users": {"cat": {"password_hash": auth.hash_password("meow")}}}})
    with mock.patch.object(auth, "_failures", {}):
        for minute in range(auth.MAX_FAILURES):
            assert auth.sign_in(config, "cat", "woof", now=60.0 * minute) is None
        t = 60.0 * auth.MAX_FAILURES
        assert auth.locked_for("cat", now=t) == pytest.approx(auth.LOCKOUT_S - t)
        assert auth.sign_in(config, "cat", "meow", now=t) is None  # even the right password, while locked
        assert auth.locked_for("dog", now=t) == 0  # per user name
        later = auth.LOCKOUT_S + 60.0
        assert auth.locked_for("cat", now=later) == 0 and auth.sign_in(config, "cat", "meow", now=later).name == "cat"
        assert auth._failures.get("cat") is None  # a success clears the count


def test_off_without_secrets_and_oidc_providers_found_for_st_login():
    assert not auth.config_from_secrets({}).enabled
    assert not auth.config_from_secrets(None).enabled
    assert not auth.config_from_secrets({"other": {"x": 1}}).enabled
    single = auth.config_from_secrets({"auth": {"redirect_uri": "http://localhost:8501/oauth2callback",
                                                "cookie_secret": "s", "client_id": "id", "client_secret": "c",
                                                "server_metadata_url": "https://idp/.well-known/openid-configuration",
                                                "admins": ["head@clinic.org"]}})
    assert single.enabled and single.oidc_providers == ("",)
    assert single.role_of("head@clinic.org") == "admin" and single.role_of("nurse@clinic.org") == "user"
    named = auth.config_from_secrets({"auth": {"redirect_uri": "r", "cookie_secret": "s",
                                               "google": {"client_id": "a", "client_secret": "b",
                                                          "server_metadata_url": "u"}}})
    assert named.oidc_providers == ("google",)


@pytest.mark.parametrize("entry, message", [({}, "password_hash"),
                                            ({"password_hash": "$2b$12$x", "role": "root"}, "role")])
def test_malformed_user_entries_are_refused(entry, message):
    with pytest.raises(ValueError, match=message):
        auth.config_from_secrets({"auth": {"users": {"ann": entry}}})
