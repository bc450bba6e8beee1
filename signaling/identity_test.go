package signaling

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
)

func TestFormatNumberE164(t *testing.T) {
	tr := &config.Trunk{NumberFormat: "e164", CountryCode: "44"}
	for in, want := range map[string]string{
		"+44 20 7946 0000": "+442079460000",
		"0044207946000":    "+44207946000",
		"02079460000":      "+442079460000",
		"442079460000":     "+442079460000",
		"2079460000":       "+442079460000",
		"alice":            "alice",
	} {
		if got := formatNumber(tr, in); got != want {
			t.Errorf("formatNumber(%q) = %q, want %q", in, got, want)
		}
	}
	if got := formatNumber(&config.Trunk{}, "02079460000"); got != "02079460000" {
		t.Errorf("no number_format changed %q", got)
	}
}

// TestOutboundIdentity: the trunk sees the browser's number in E.164 in
// From and P-Asserted-Identity, the one header it is configured to
// receive, and none of the browser's others.
func TestOutboundIdentity(t *testing.T) {
	for _, tc := range []struct {
		name, callerID, want string
	}{
		{"browser-number", "", "+442079460000"},
		{"fixed-caller-id", "01134960000", "+441134960000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newTrunkUAS(t)
			r := startRelay(t, func(c *config.Config) {
				c.Trunks = []config.Trunk{{Name: "uk", Match: ".*", Address: "sip:" + u.addr, Codecs: []string{"PCMU"},
					NumberFormat: "e164", CountryCode: "44", AssertIdentity: true, PassHeaders: []string{"X-Account"}, CallerID: tc.callerID}}
			})
			p := newPhone(t, "PCMU")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			host, port := splitHostPort(r.HTTPAddr().String())
			from := &sip.FromHeader{DisplayName: "Dee", Address: sip.Uri{User: "02079460000", Host: "phone.invalid"}, Params: sip.NewParams()}
			from.Params.Add("tag", sip.GenerateTagN(8))
			dcs, err := p.dua.Invite(ctx, sip.Uri{User: "1234", Host: host, Port: port, UriParams: sip.HeaderParams{{K: "transport", V: "ws"}}},
				[]byte(p.offer()), sip.NewHeader("Content-Type", "application/sdp"), from,
				sip.NewHeader("X-Account", "42"), sip.NewHeader("X-Secret", "do-not-pass"), sip.NewHeader("P-Asserted-Identity", "<sip:spoofed@evil>"))
			if err != nil {
				t.Fatal(err)
			}
			if err := dcs.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
				t.Fatal(err)
			}
			_ = dcs.Ack(ctx)
			p.dcs = dcs
			inv := u.lastInvite()
			if got := inv.From().Address.User; got != tc.want {
				t.Errorf("From user %q, want %q", got, tc.want)
			}
			pais := inv.GetHeaders("P-Asserted-Identity")
			if len(pais) != 1 || !strings.Contains(pais[0].Value(), "sip:"+tc.want+"@") {
				t.Errorf("P-Asserted-Identity %v, want one with %s", pais, tc.want)
			}
			if h := inv.GetHeader("X-Account"); h == nil || h.Value() != "42" {
				t.Errorf("configured header not passed: %v", h)
			}
			if inv.GetHeader("X-Secret") != nil || strings.Contains(inv.String(), "evil") {
				t.Errorf("unconfigured browser headers reached the trunk:\n%s", inv)
			}
			p.hangup()
		})
	}
}

// TestInboundIdentity: a national caller number from the trunk reaches the
// browser in E.164, with only the configured headers.
func TestInboundIdentity(t *testing.T) {
	r, u := inboundRelay(t, func(c *config.Config) {
		tr := &c.Trunks[len(c.Trunks)-1]
		tr.NumberFormat, tr.CountryCode, tr.PassHeaders = "e164", "44", []string{"X-Account"}
	})
	u.fromUser = "01632960000"
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := u.invite(ctx, r, "alice", sip.NewHeader("X-Account", "7"), sip.NewHeader("X-Internal", "secret"))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("invite: %v %v", res, err)
	}
	inv := p.invites[0]
	if got := inv.From().Address.User; got != "+441632960000" {
		t.Errorf("browser sees caller %q", got)
	}
	if h := inv.GetHeader("X-Account"); h == nil || h.Value() != "7" {
		t.Errorf("configured header not passed: %v", h)
	}
	if inv.GetHeader("X-Internal") != nil {
		t.Errorf("unconfigured trunk header reached the browser")
	}
	_ = u.bye()
}
