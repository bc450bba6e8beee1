package config

import (
	"strings"
	"testing"
)

func TestUsersAndInboundKeysValidated(t *testing.T) {
	for _, tc := range []struct {
		yaml, key string
	}{
		{"users:\n  - name: alice\n", "users[0].password"},
		{"users:\n  - password: x\n", "users[0].name"},
		{"users:\n  - name: a\n    password: x\n  - name: a\n    password: y\n", "users[1].name"},
		{"users:\n  - name: a\n    ha1_md5: xyz\n", "users[0].ha1_md5"},
		{"users:\n  - name: a\n    password: x\n    dids: [abc]\n", "users[0].dids"},
		{"users:\n  - name: a\n    password: x\n    dids: ['+1 555']\n  - name: b\n    password: y\n    dids: ['+1555']\n", "users[1].dids"},
		{"sip:\n  register_rate: 0\n", "sip.register_rate"},
		{"sip:\n  digest_algorithms: [SHA-1]\n", "sip.digest_algorithms"},
		{"sip:\n  auth_lockout: 0s\n", "sip.auth_lockout"},
		{"trunks:\n  - name: t\n    address: 10.0.0.1\n    sources: [bogus]\n", "trunks[0].sources"},
		{"trunks:\n  - name: t\n    address: 10.0.0.1\n    inbound_username: u\n", "trunks[0].inbound_username"},
		{"trunks:\n  - name: t\n    address: 10.0.0.1\n    register: true\n", "trunks[0].register"},
		{"trunks:\n  - name: t\n    address: 10.0.0.1\n    number_format: e164\n", "trunks[0].country_code"},
		{"trunks:\n  - name: t\n    address: 10.0.0.1\n    number_format: local\n", "trunks[0].number_format"},
		{"trunks:\n  - name: t\n    address: 10.0.0.1\n    pass_headers: [Via]\n", "trunks[0].pass_headers"},
		{"trunks:\n  - name: t\n    address: 10.0.0.1\n    dtmf: sms\n", "trunks[0].dtmf"},
	} {
		_, err := LoadFile(writeFile(t, tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.key+":") {
			t.Errorf("%q: error %v, want one naming %s", tc.yaml, err, tc.key)
		}
	}
	c, err := LoadFile(writeFile(t, "users:\n  - name: alice\n    ha1_sha256: "+strings.Repeat("ab", 32)+"\n    dids: ['+44 20 7946 0000']\ntrunks:\n  - name: t\n    address: 10.0.0.1\n    sources: [192.0.2.0/24, 198.51.100.7]\n    number_format: e164\n    country_code: '44'\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Users) != 1 || c.Trunks[0].Sources[1] != "198.51.100.7" {
		t.Fatalf("loaded %+v", c)
	}
}
