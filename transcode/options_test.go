package transcode

import (
	"strings"
	"sync"
	"testing"

	"github.com/mediarelay/mediarelay/transcode/tone"
)

func TestNewBridgeRejectsBadOptions(t *testing.T) {
	good := Options{OpusPT: 111, SIPCodec: "PCMU"}
	for _, c := range []struct {
		mod  func(*Options)
		want string
	}{
		{func(o *Options) { o.SIPCodec = "GSM" }, "GSM"},
		{func(o *Options) { o.PtimeMs = 25 }, "ptime 25"},
		{func(o *Options) { o.OpusPT = 200 }, "OpusPT"},
		{func(o *Options) { o.SIPDTMFPT = 0; o.SIPPT, o.SIPDTMFPT = 101, 101 }, "share"},
		{func(o *Options) { o.OpusComplexity = 11 }, "complexity"},
		{func(o *Options) { o.OpusPacketLoss = -1 }, "loss"},
		{func(o *Options) { o.OpusBitrate = 100 }, "bit rate"},
	} {
		o := good
		c.mod(&o)
		if _, err := NewBridge(o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("options %+v: error %v, want one mentioning %q", o, err, c.want)
		}
	}
	if _, err := NewBridge(good); err != nil {
		t.Errorf("zero-value extras rejected: %v", err)
	}
}

// TestBridgeConcurrent runs both directions at once while another
// goroutine reads Stats (run with -race), and checks a second concurrent
// Run of the same direction is refused.
func TestBridgeConcurrent(t *testing.T) {
	b := newTestBridge(t, "PCMU", 0, nil)
	toSIP := opusStream(t, tone.Generate([]float64{1000}, 48000, 48000, 0.25), false, 0, 0, 1)
	toWeb := sipStream("PCMU", 0, tone.Generate([]float64{400}, 8000, 8000, 0.25), 20, 0, 0, 2)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_ = b.Stats()
			}
		}
	}()
	r := &chanReader{ch: make(chan []byte)}
	go func() {
		defer wg.Done()
		_ = b.RunToSIP(r, &collectWriter{})
	}()
	go func() {
		defer wg.Done()
		run(t, b, false, toWeb)
	}()
	// Once the first packet is consumed, RunToSIP is certainly running.
	r.ch <- toSIP[0]
	if err := b.RunToSIP(&chanReader{ch: make(chan []byte)}, &collectWriter{}); err != errRunning {
		t.Errorf("second RunToSIP: %v, want errRunning", err)
	}
	for _, p := range toSIP[1:] {
		r.ch <- p
	}
	close(r.ch)
	close(stop)
	wg.Wait()
	if st := b.Stats(); st.ToSIPPackets != 50 || st.ToWebRTCPackets != 50 {
		t.Errorf("stats %+v", st)
	}
}
