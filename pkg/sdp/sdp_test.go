package sdp

import (
	"net/netip"
	"testing"
)

const sipOffer = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" +
	"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:30\r\na=rtcp:4005\r\na=sendonly\r\n"

func TestParseStaticAndDynamic(t *testing.T) {
	_, a, err := Parse([]byte(sipOffer))
	if err != nil {
		t.Fatal(err)
	}
	if a.Addr != netip.MustParseAddr("192.0.2.1") || a.Port != 4000 || a.RTCPPort != 4005 {
		t.Fatalf("address: %+v", a)
	}
	if len(a.Codecs) != 3 || !a.Codecs[0].Is("pcmu") || !a.Codecs[1].Is("PCMA") || a.Codecs[2].PT != 101 {
		t.Fatalf("codecs: %+v", a.Codecs)
	}
	if ev, ok := a.DTMF(8000); !ok || ev.Fmtp != "0-16" {
		t.Fatalf("dtmf: %+v", ev)
	}
	if a.Ptime != 30 || a.Direction != "sendonly" {
		t.Fatalf("ptime/direction: %+v", a)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	o := Offer{SessionID: 7, Version: 1, Addr: netip.MustParseAddr("127.0.0.1"), Port: 20000,
		Codecs: []Codec{{Name: "opus", PT: 111, Clock: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1"},
			{Name: "PCMU", PT: 0, Clock: 8000, Channels: 1}, {Name: "telephone-event", PT: 101, Clock: 8000, Channels: 1}},
		Ptime: 20}
	_, a, err := Parse(o.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if a.Port != 20000 || len(a.Codecs) != 3 || a.Codecs[0].Channels != 2 || a.Codecs[0].Fmtp == "" || a.Ptime != 20 {
		t.Fatalf("round trip: %+v", a)
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	for _, s := range []string{"", "hello", "v=0\r\nm=audio x RTP/AVP 0\r\n",
		"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=video 1 RTP/AVP 96\r\n",
		"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 host.example\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n"} {
		if _, _, err := Parse([]byte(s)); err == nil {
			t.Errorf("no error for %q", s)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sipOffer))
	f.Add([]byte("v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP6 ::1\r\na=rtpmap:111 opus/48000/2\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, a, err := Parse(b)
		if err != nil {
			return
		}
		if a.Port < 0 || a.Port > 65535 {
			t.Fatalf("port %d", a.Port)
		}
		// Whatever parsed must marshal and parse again.
		o := Offer{Addr: netip.MustParseAddr("127.0.0.1"), Port: 1, Codecs: a.Codecs, Ptime: a.Ptime}
		if _, _, err := Parse(o.Marshal()); err != nil && len(a.Codecs) > 0 {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

func TestAnswerDirection(t *testing.T) {
	for offered, want := range map[string]string{
		"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive", "": "sendrecv",
	} {
		if got := AnswerDirection(offered); got != want {
			t.Errorf("AnswerDirection(%q) = %q, want %q", offered, got, want)
		}
	}
}
