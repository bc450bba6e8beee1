package cdr

import "testing"

// TestWhoEnded: an end cause names the side that ended a call or a join.
func TestWhoEnded(t *testing.T) {
	for cause, want := range map[string]string{
		CauseNormalBrowser:  EndedByBrowser,
		CauseCancelled:      EndedByBrowser,
		CauseNormalTrunk:    EndedByTrunk,
		CauseBusy:           EndedByTrunk,
		CauseRejected:       EndedByTrunk,
		CauseMediaTimeout:   EndedByRelay,
		CauseSessionExpired: EndedByRelay,
		CauseShutdown:       EndedByRelay,
		CauseTransferred:    EndedByRelay,
	} {
		if got := WhoEnded(cause); got != want {
			t.Errorf("WhoEnded(%q) = %q, want %q", cause, got, want)
		}
	}
}
