module github.com/mediarelay/mediarelay

go 1.26.0

require (
	github.com/emiago/sipgo v1.7.2
	github.com/hraban/opus v0.0.0-20260708213942-bde8e4304501
	github.com/pion/dtls/v3 v3.1.8
	github.com/pion/ice/v4 v4.4.2
	github.com/pion/interceptor v0.1.48
	github.com/pion/rtcp v1.2.17
	github.com/pion/rtp v1.10.5
	github.com/pion/sdp/v3 v3.0.19
	github.com/pion/srtp/v3 v3.0.13
	github.com/pion/webrtc/v4 v4.2.20
	gopkg.in/yaml.v3 v3.0.1
	modernc.org/sqlite v1.61.1
)

require github.com/pion/randutil v0.1.0 // indirect
