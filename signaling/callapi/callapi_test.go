package callapi

import (
	"net/http"
	"net/netip"
	"testing"
)

const testAdminToken = "s3cret-admin-token-0123456789"

func TestAdminAllowed(t *testing.T) {
	far := netip.MustParseAddr("192.0.2.7") // a value only: no socket is opened
	for _, tc := range []struct {
		name, token, authz string
		remote             netip.Addr
		want               int
	}{
		{"no token, loopback v4", "", "", netip.MustParseAddr("127.0.0.1"), http.StatusOK},
		{"no token, loopback v6", "", "", netip.IPv6Loopback(), http.StatusOK},
		{"no token, v4-mapped loopback", "", "", netip.MustParseAddr("::ffff:127.0.0.1"), http.StatusOK},
		{"no token, other address", "", "", far, http.StatusForbidden},
		{"no token, other address with a bearer", "", "Bearer anything", far, http.StatusForbidden},
		{"no token, invalid address", "", "", netip.Addr{}, http.StatusForbidden},
		{"token, right bearer from afar", testAdminToken, "Bearer " + testAdminToken, far, http.StatusOK},
		{"token, scheme in lower case", testAdminToken, "bearer " + testAdminToken, far, http.StatusOK},
		{"token, wrong bearer", testAdminToken, "Bearer " + testAdminToken + "x", far, http.StatusUnauthorized},
		{"token, prefix of it", testAdminToken, "Bearer " + testAdminToken[:10], far, http.StatusUnauthorized},
		{"token, none sent, even on loopback", testAdminToken, "", netip.MustParseAddr("127.0.0.1"), http.StatusUnauthorized},
		{"token, basic auth", testAdminToken, "Basic " + testAdminToken, far, http.StatusUnauthorized},
		{"token, bare token", testAdminToken, testAdminToken, far, http.StatusUnauthorized},
		{"token, empty bearer", testAdminToken, "Bearer ", far, http.StatusUnauthorized},
	} {
		if got := allowed(tc.token, tc.remote, tc.authz, "127.0.0.1:8080"); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestAdminAllowedHost: without a token a loopback client must also name
// loopback in Host, so a rebound DNS name of a hostile page gets nothing.
func TestAdminAllowedHost(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for host, want := range map[string]int{
		"127.0.0.1:8080": http.StatusOK, "127.0.0.1": http.StatusOK, "[::1]:8080": http.StatusOK, "localhost:8080": http.StatusOK,
		"LOCALHOST": http.StatusOK, "127.1.2.3:80": http.StatusOK,
		"evil.example:8080": http.StatusForbidden, "evil.example": http.StatusForbidden, "": http.StatusForbidden,
		"192.0.2.7:8080": http.StatusForbidden, "localhost.evil.example": http.StatusForbidden,
	} {
		if got := allowed("", lo, "", host); got != want {
			t.Errorf("Host %q: %d, want %d", host, got, want)
		}
	}
	// With a token, Host does not matter: the token does.
	if got := allowed(testAdminToken, lo, "Bearer "+testAdminToken, "relay.example:8080"); got != http.StatusOK {
		t.Errorf("token from a named host: %d", got)
	}
}
