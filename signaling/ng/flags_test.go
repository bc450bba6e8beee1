package ng

import "testing"

// TestFlagsMeaning: transport-protocol decides the other side's kind before
// ICE does, and only-X/no-X filter SDES suites.
func TestFlagsMeaning(t *testing.T) {
	for _, tc := range []struct {
		f        Flags
		offerWeb bool
		want     bool
	}{
		{Flags{}, true, true},
		{Flags{}, false, false},
		{Flags{TransportProtocol: "UDP/TLS/RTP/SAVPF", ICE: "remove"}, false, true},
		{Flags{TransportProtocol: "RTP/AVP", ICE: "force"}, true, false},
		{Flags{ICE: "force-relay"}, false, true},
		{Flags{ICE: "remove"}, true, false},
	} {
		if got := tc.f.WantsWebRTC(tc.offerWeb); got != tc.want {
			t.Errorf("%+v.WantsWebRTC(%v) = %v, want %v", tc.f, tc.offerWeb, got, tc.want)
		}
	}
	const gcm, cm80 = "AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"
	for _, tc := range []struct {
		sdes  []string
		suite string
		want  bool
	}{
		{nil, cm80, true},
		{[]string{"no-AES_CM_128_HMAC_SHA1_80"}, cm80, false},
		{[]string{"no-AES_CM_128_HMAC_SHA1_80"}, gcm, true},
		{[]string{"only-AEAD_AES_128_GCM"}, gcm, true},
		{[]string{"only-AEAD_AES_128_GCM"}, cm80, false},
	} {
		f := Flags{SDES: tc.sdes}
		if got := f.AllowsSDES(tc.suite); got != tc.want {
			t.Errorf("SDES %v AllowsSDES(%s) = %v, want %v", tc.sdes, tc.suite, got, tc.want)
		}
	}
}
