package signaling

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/digest"
)

// TestRegisterToTrunk runs a registrar stand-in that challenges with
// digest and grants 2 s: the relay registers, refreshes before expiry, and
// unregisters when it stops.
func TestRegisterToTrunk(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ua, _ := sipgo.NewUA()
	defer ua.Close()
	srv, _ := sipgo.NewServer(ua)
	creds := digest.NewCredentials("carrier")
	creds.AddPassword("acct42", "s3cret")
	nonces := digest.NewNonces()
	var mu sync.Mutex
	var ok, zero int
	var contacts []string
	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
		if h := req.GetHeader("Authorization"); h != nil {
			if res, user := creds.Verify(nonces, h.Value(), "REGISTER", "127.0.0.1", time.Now()); res == digest.OK && user == "acct42" {
				mu.Lock()
				if e := req.GetHeader("Expires"); e != nil && e.Value() == "0" {
					zero++
				} else {
					ok++
				}
				contacts = append(contacts, req.Contact().Address.String())
				mu.Unlock()
				res := sip.NewResponseFromRequest(req, 200, "OK", nil)
				res.AppendHeader(sip.NewHeader("Expires", "2"))
				_ = tx.Respond(res)
				return
			}
		}
		res := sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
		res.AppendHeader(sip.NewHeader("WWW-Authenticate", digest.Challenges("carrier", nonces.Make("127.0.0.1", time.Now()), false)[0]))
		_ = tx.Respond(res)
	})
	go func() { _ = srv.ServeUDP(pc) }()
	defer pc.Close()

	ctx, cancel := context.WithCancel(context.Background())
	cfg := config.Default()
	cfg.HTTP.Listen, cfg.SIP.UDPListen, cfg.SIP.TCPListen = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.Media.WebRTCPort, cfg.CDR.Path = 0, ""
	cfg.Media.PortMin, cfg.Media.PortMax = nextPortRange()
	cfg.Trunks = []config.Trunk{{Name: "carrier", Address: "sip:" + pc.LocalAddr().String(), Username: "acct42", Password: "s3cret",
		Register: true, RegisterExpires: time.Minute}}
	r, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	<-r.Ready()
	// Granted 2 s, refreshed every second: three registrations in ~2.5 s.
	waitFor(t, "registration and refreshes", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ok >= 3
	})
	if text := metricsText(t, r); metricValue(text, "mediarelay_trunk_registered", `trunk="carrier"`) != 1 {
		t.Fatalf("registration gauge not 1:\n%s", text)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if zero != 1 {
		t.Fatalf("%d unregistrations at shutdown, want 1", zero)
	}
	_, port := splitHostPort(r.SIPUDPAddr().String())
	if c := contacts[0]; c != "sip:acct42@127.0.0.1:"+strconv.Itoa(port) {
		t.Fatalf("registered contact %s", c)
	}
}
