package config

import (
	"os"
	"testing"
)

// FuzzLoadYAML feeds arbitrary bytes to Load as the config file: it may
// refuse them, but must not panic, and what it accepts must validate.
func FuzzLoadYAML(f *testing.F) {
	full, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(full),
		"",
		"media:\n  port_min: 21000\n",
		"trunks:\n  - name: a\n    address: sip:x@10.0.0.1:5060;transport=tcp\n    transport: tcp\n",
		"a: &x {b: *x}\n",
		"media: &m {port_min: 20000}\nhttp: *m\n",
		"trunks: [&t {name: a, address: h}, *t]\n",
		"media:\n  <<: {port_min: 1}\n",
		"---\n---\n",
		"media: !!binary aGVsbG8=\n",
		"log: {level: [x]}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Load itself, with the file read from memory: writing a file per
		// input made the fuzzer wait on the disk, not on the code.
		read := func(string) ([]byte, error) { return data, nil }
		c, err := load([]string{"--config", "fuzz.yaml"}, nil, read)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted a config that does not validate: %v", err)
		}
	})
}
