//go:build linux

package benchmarks

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// pionPeer answers the load client's offers with a pion PeerConnection: a
// full ICE agent (it checks us too, as rtpengine does) that echoes the
// audio it receives. role is the DTLS role it answers with.
type pionPeer struct {
	t    *testing.T
	api  *webrtc.API
	role webrtc.DTLSRole
	pcs  []*webrtc.PeerConnection
}

func newPionPeer(t *testing.T, role webrtc.DTLSRole) *pionPeer {
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if err := se.SetAnsweringDTLSRole(role); err != nil {
		t.Fatal(err)
	}
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	return &pionPeer{t: t, role: role, api: webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))}
}

func (p *pionPeer) Setup(ctx context.Context, c *call, offer string) (string, int, error) {
	pc, err := p.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", 0, err
	}
	p.pcs = append(p.pcs, pc)
	echo, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, "audio", "peer")
	if err != nil {
		return "", 0, err
	}
	if _, err := pc.AddTrack(echo); err != nil {
		return "", 0, err
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			_ = echo.WriteRTP(pkt)
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", 488, err
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", 488, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", 488, err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", 0, ctx.Err()
	}
	return pc.LocalDescription().SDP, 200, nil
}

func (p *pionPeer) Teardown(context.Context, *call) error { return nil }

func (p *pionPeer) Close() {
	for _, pc := range p.pcs {
		_ = pc.Close()
	}
}

// TestClientAgainstFullAgent places calls against a full ICE agent that
// checks the client too, in both DTLS roles, and waits for the echo.
func TestClientAgainstFullAgent(t *testing.T) {
	for name, role := range map[string]webrtc.DTLSRole{"peer-active": webrtc.DTLSRoleClient, "peer-passive": webrtc.DTLSRoleServer} {
		t.Run(name, func(t *testing.T) {
			cl, err := NewClient(CodecPCMU, 1, 1, TransportUDP, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			peer := newPionPeer(t, role)
			defer peer.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c := &call{idx: 0, id: "x", user: "u", sig: peer}
			if err := cl.place(ctx, c, 10*time.Second); err != nil {
				t.Fatalf("place: %v", err)
			}
			if c.dtlsClient != (role == webrtc.DTLSRoleServer) {
				t.Errorf("DTLS client %v against a peer answering %v", c.dtlsClient, role)
			}
			time.Sleep(200 * time.Millisecond)
			if s := c.snapshot(); s.Received < 3 {
				t.Errorf("received %d echoed packets, want a stream", s.Received)
			}
			if err := cl.hangup(ctx, c); err != nil {
				t.Errorf("hangup: %v", err)
			}
		})
	}
}
