package sdp

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseCrypto(t *testing.T) {
	// RFC 4568 §4 example.
	c, err := ParseCrypto("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4")
	if err != nil {
		t.Fatal(err)
	}
	if c.Tag != 1 || c.Suite != "AES_CM_128_HMAC_SHA1_80" || len(c.Keys) != 1 {
		t.Fatalf("%+v", c)
	}
	k := c.Keys[0]
	if len(k.KeySalt) != 30 || k.Lifetime != 1<<20 || k.MKI != 1 || k.MKILen != 4 {
		t.Errorf("key %#v", k)
	}
	if !bytes.Equal(k.MKIBytes(), []byte{0, 0, 0, 1}) {
		t.Errorf("MKI bytes %x", k.MKIBytes())
	}
	if got, want := c.String(), "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}

	// The raw attribute value as pkg/sdp's Audio.Crypto keeps it, GCM
	// with session params, unpadded base64.
	c, err = ParseCrypto("2 AEAD_AES_128_GCM inline:MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3OA KDR=0 WSH=128")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Keys[0].KeySalt) != 28 || c.Keys[0].Lifetime != 0 || c.Keys[0].MKIBytes() != nil {
		t.Errorf("%#v", c.Keys[0])
	}
	if strings.Join(c.SessionParams, ",") != "KDR=0,WSH=128" {
		t.Errorf("session params %q", c.SessionParams)
	}

	// An unknown suite parses, so the answerer can skip it.
	if c, err := ParseCrypto("crypto:3 F8_128_HMAC_SHA1_80 inline:AAAA"); err != nil || c.Suite != "F8_128_HMAC_SHA1_80" {
		t.Errorf("unknown suite: %v %v", c, err)
	}
}

func TestParseCryptoErrors(t *testing.T) {
	key30 := "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
	for _, s := range []string{
		"",
		"1 AES_CM_128_HMAC_SHA1_80",
		"x AES_CM_128_HMAC_SHA1_80 inline:" + key30,
		"1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + key30,
		"1 AES_CM_128_HMAC_SHA1_80 uri:http://x",
		"1 AES_CM_128_HMAC_SHA1_80 inline:",
		"1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
		"1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", // wrong length for the suite
		"1 AEAD_AES_256_GCM inline:" + key30,
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^99",
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|0",
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1:0",
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|256:1",
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1:4|2^20",
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1:4|2:4",
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|1:4|x",
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + ";inline:" + key30,
	} {
		if _, err := ParseCrypto(s); !errors.Is(err, ErrCrypto) {
			t.Errorf("ParseCrypto(%q) = %v, want ErrCrypto", s, err)
		}
	}
}

func TestGenerateCrypto(t *testing.T) {
	for suite, n := range cryptoKeySaltLen {
		c, err := GenerateCrypto(1, suite)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Keys) != 1 || len(c.Keys[0].KeySalt) != n {
			t.Fatalf("%s: %d bytes", suite, len(c.Keys[0].KeySalt))
		}
		back, err := ParseCrypto(c.String())
		if err != nil || !back.Equal(c) {
			t.Fatalf("%s: round trip %v", suite, err)
		}
		again, _ := GenerateCrypto(1, suite)
		if bytes.Equal(again.Keys[0].KeySalt, c.Keys[0].KeySalt) {
			t.Fatalf("%s: same key twice", suite)
		}
	}
	if _, err := GenerateCrypto(1, "NULL"); err == nil {
		t.Error("unknown suite accepted")
	}
	// Key material stays out of %#v.
	c, _ := GenerateCrypto(1, "AEAD_AES_128_GCM")
	if s := fmt.Sprintf("%#v", c.Keys[0]); strings.Contains(s, fmt.Sprint(c.Keys[0].KeySalt[:4])) {
		t.Errorf("key in %s", s)
	}
}

// FuzzParseCrypto: no panics, and whatever parses formats back to an
// attribute that parses to the same value.
func FuzzParseCrypto(f *testing.F) {
	for _, s := range []string{
		"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
		"a=crypto:2 AEAD_AES_256_GCM inline:MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ= UNENCRYPTED_SRTCP",
		"3 X inline:AAAA|1:1;inline:AAAB|1048576|2:1 KDR=1",
		"0 0 inline:0A==|1", // once formatted as the invalid 2^0
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCrypto(s)
		if err != nil {
			return
		}
		back, err := ParseCrypto(c.String())
		if err != nil {
			t.Fatalf("formatted %q does not parse: %v", c.String(), err)
		}
		if !back.Equal(c) {
			t.Fatalf("round trip changed %q to %q", s, c.String())
		}
		for _, k := range c.Keys {
			if k.MKILen != 0 && len(k.MKIBytes()) != k.MKILen {
				t.Fatal("MKI length")
			}
		}
	})
}
