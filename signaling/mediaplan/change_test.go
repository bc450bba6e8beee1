package mediaplan

import (
	"testing"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

var dtmf96 = sdp.Codec{Name: "telephone-event", PT: 96, Clock: 8000, Channels: 1, Fmtp: "0-16"}

// TestReplan: what the relay makes of a trunk's mid-call offer, for each
// browser codec and media mode; the browser's codec never changes.
func TestReplan(t *testing.T) {
	pcmu, pcma, g722, opus := SIPCodecs["pcmu"], SIPCodecs["pcma"], SIPCodecs["g722"], SIPCodecs["opus"]
	g729 := sdp.Codec{Name: "G729", PT: 18, Clock: 8000, Channels: 1}
	opus96 := opus
	opus96.PT = 96
	all := []string{"PCMU", "PCMA", "G722", "opus", "G729"}
	transcoded := Plan{Mode: ModeTranscode, SIPCodec: pcmu, SIPDTMF: DTMF8k, BrowserCodec: "opus"}
	passed := Plan{Mode: ModePassthrough, SIPCodec: pcmu, SIPDTMF: DTMF8k, BrowserCodec: "PCMU"}
	opusPassed := Plan{Mode: ModePassthrough, SIPCodec: opus, BrowserCodec: "opus"}
	for _, tc := range []struct {
		name     string
		mode     string
		allowed  []string
		cur      Plan
		offer    []sdp.Codec
		wantMode string
		want     sdp.Codec // zero: refused
		wantDTMF uint8
	}{
		{"opus: PCMU to PCMA", ModeAuto, all, transcoded, []sdp.Codec{pcma, dtmf96}, ModeTranscode, pcma, 96},
		{"opus: PCMU to G722 in transcode", ModeTranscode, all, transcoded, []sdp.Codec{g722}, ModeTranscode, g722, 0},
		{"opus: the current codec stays first", ModeAuto, all, transcoded, []sdp.Codec{pcma, pcmu, DTMF8k}, ModeTranscode, pcmu, 101},
		{"opus: the browser's codec before transcoding", ModeAuto, all, transcoded, []sdp.Codec{g722, opus}, ModePassthrough, opus, 0},
		{"opus: no passthrough in transcode", ModeTranscode, all, transcoded, []sdp.Codec{opus}, "", sdp.Codec{}, 0},
		{"opus: not a configured codec", ModeAuto, []string{"PCMU", "opus"}, transcoded, []sdp.Codec{pcma}, "", sdp.Codec{}, 0},
		{"opus: nothing the relay speaks", ModeAuto, all, transcoded, []sdp.Codec{g729}, "", sdp.Codec{}, 0},
		{"opus passed through: renumbered", ModeAuto, all, opusPassed, []sdp.Codec{opus96}, ModePassthrough, opus96, 0},
		{"opus passed through: to PCMU", ModeAuto, all, opusPassed, []sdp.Codec{pcmu, DTMF8k}, ModeTranscode, pcmu, 101},
		{"PCMU: to PCMA", ModeAuto, all, passed, []sdp.Codec{pcma, DTMF8k}, ModeTranscode, pcma, 101},
		{"PCMU: to PCMA in passthrough", ModePassthrough, all, passed, []sdp.Codec{pcma, DTMF8k}, "", sdp.Codec{}, 0},
		{"PCMU: G722 is not G.711", ModeAuto, all, passed, []sdp.Codec{g722, DTMF8k}, "", sdp.Codec{}, 0},
		{"PCMU: back from PCMA", ModeAuto, all, Plan{Mode: ModeTranscode, SIPCodec: pcma, BrowserCodec: "PCMU"}, []sdp.Codec{g722, pcmu}, ModePassthrough, pcmu, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Replan(tc.mode, tc.allowed, tc.cur, sdp.Audio{Codecs: tc.offer})
			if tc.want.Name == "" {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				if got != tc.cur {
					t.Fatalf("a refused offer changed the plan to %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Mode != tc.wantMode || got.SIPCodec != tc.want || got.SIPDTMF.PT != tc.wantDTMF || got.BrowserCodec != tc.cur.BrowserCodec {
				t.Fatalf("got %+v, want mode %s codec %+v telephone-event %d", got, tc.wantMode, tc.want, tc.wantDTMF)
			}
		})
	}
}
