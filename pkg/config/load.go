package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts every environment variable the relay reads.
const EnvPrefix = "MEDIARELAY_"

// Keys that are not fields of Config but are read from flags and the environment.
const (
	configKey = "config" // --config FILE, MEDIARELAY_CONFIG
	trunksKey = "trunks" // --trunks YAML, MEDIARELAY_TRUNKS: the trunk list inline
)

var durationType = reflect.TypeOf(time.Duration(0))

// field is one scalar key of Config, found by reflection so that a field
// added to the struct is settable everywhere without touching this file.
type field struct {
	key   string // YAML path: "media.port_min"
	flag  string // "media-port-min"
	env   string // "MEDIARELAY_MEDIA_PORT_MIN"
	index []int  // reflect.Value.FieldByIndex path from Config
	typ   reflect.Type
}

// fields lists Config's scalar keys in declaration order.
var fields = scalarFields(reflect.TypeOf(Config{}), "", nil)

func scalarFields(t reflect.Type, prefix string, index []int) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name := yamlName(sf)
		if name == "" {
			continue
		}
		key := prefix + name
		idx := append(append([]int(nil), index...), i)
		switch {
		case sf.Type.Kind() == reflect.Struct && sf.Type != durationType:
			out = append(out, scalarFields(sf.Type, key+".", idx)...)
		case sf.Type.Kind() == reflect.Slice && sf.Type.Elem().Kind() != reflect.String:
			// Lists of structs (trunks) are YAML-only; see trunksKey.
		default:
			out = append(out, field{
				key:   key,
				flag:  strings.NewReplacer(".", "-", "_", "-").Replace(key),
				env:   EnvPrefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key)),
				index: idx,
				typ:   sf.Type,
			})
		}
	}
	return out
}

// yamlName is the key a struct field has in YAML, or "" if it has none.
func yamlName(sf reflect.StructField) string {
	if !sf.IsExported() {
		return ""
	}
	tag, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
	if tag == "-" {
		return ""
	}
	if tag == "" {
		return strings.ToLower(sf.Name)
	}
	return tag
}

// setScalar parses s as the flag/environment form of a value of f's type.
func setScalar(c *Config, f field, s string) error {
	v := reflect.ValueOf(c).Elem().FieldByIndex(f.index)
	switch {
	case f.typ == durationType:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 30s, 1m30s)", s)
		}
		v.SetInt(int64(d))
	case f.typ.Kind() == reflect.String:
		v.SetString(s)
	case f.typ.Kind() == reflect.Int:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		v.SetInt(int64(n))
	case f.typ.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a boolean (true or false)", s)
		}
		v.SetBool(b)
	case f.typ.Kind() == reflect.Slice && f.typ.Elem().Kind() == reflect.String:
		var list []string
		for _, item := range strings.Split(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				list = append(list, item)
			}
		}
		v.Set(reflect.ValueOf(list))
	default:
		// Only reachable if someone adds a field of a new type to Config.
		return fmt.Errorf("type %s cannot be set from a flag or the environment", f.typ)
	}
	return nil
}

// formatScalar is the flag form of a value, for Usage.
func formatScalar(v reflect.Value) string {
	switch {
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = v.Index(i).String()
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(v.Interface())
	}
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.Slice:
		return "list"
	default:
		return t.Kind().String()
	}
}

// recorder is a flag.Value that only remembers what it was given, so that
// flags can be parsed first (to find --config) and applied last.
type recorder struct {
	name   string
	isBool bool
	set    *[]setting
}

type setting struct{ name, value string }

func (r recorder) String() string { return "" }
func (r recorder) Set(s string) error {
	*r.set = append(*r.set, setting{r.name, s})
	return nil
}
func (r recorder) IsBoolFlag() bool { return r.isBool }

// newFlagSet declares every key as a flag; parsed values land in *set.
func newFlagSet(set *[]setting) *flag.FlagSet {
	fs := flag.NewFlagSet("mediarelay serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, not printed
	fs.Var(recorder{name: configKey, set: set}, configKey, "YAML configuration file")
	fs.Var(recorder{name: trunksKey, set: set}, trunksKey, "trunk list as inline YAML or JSON")
	for _, f := range fields {
		fs.Var(recorder{name: f.flag, isBool: f.typ.Kind() == reflect.Bool, set: set}, f.flag, f.key)
	}
	return fs
}

// Load builds the configuration: defaults < YAML file (--config FILE, or
// MEDIARELAY_CONFIG) < MEDIARELAY_* environment < flags. args are the
// arguments after the subcommand; environ is in os.Environ form. The result
// is normalised and validated. For -h or --help it returns an error
// wrapping flag.ErrHelp; the caller then prints Usage.
func Load(args []string, environ []string) (Config, error) {
	return load(args, environ, os.ReadFile)
}

// load is Load with the file reader given, so the fuzz test can feed bytes
// without touching the disk.
func load(args []string, environ []string, readFile func(string) ([]byte, error)) (Config, error) {
	var flagSettings []setting
	fs := newFlagSet(&flagSettings)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, err
		}
		return Config{}, fmt.Errorf("command line: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("command line: unexpected argument %q", fs.Arg(0))
	}

	byEnv := make(map[string]field, len(fields))
	for _, f := range fields {
		byEnv[f.env] = f
	}
	// Check every MEDIARELAY_ variable before reading the file, so a typo in
	// the environment is reported even when the file is also wrong.
	var envSettings []setting
	path := ""
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		switch name {
		case EnvPrefix + "CONFIG":
			path = value
			continue
		case EnvPrefix + "TRUNKS":
		default:
			if _, known := byEnv[name]; !known {
				return Config{}, fmt.Errorf("environment: unknown variable %s", name)
			}
		}
		envSettings = append(envSettings, setting{name, value})
	}
	for _, s := range flagSettings {
		if s.name == configKey {
			path = s.value // the last --config wins, and a flag beats the environment
		}
	}

	c := Default()
	if path != "" {
		data, err := readFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config file: %w", err)
		}
		if err := decodeYAML(data, &c); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}

	for _, s := range envSettings {
		if s.name == EnvPrefix+"TRUNKS" {
			if err := decodeTrunks(s.value, &c); err != nil {
				return Config{}, fmt.Errorf("environment %s: %w", s.name, err)
			}
			continue
		}
		f := byEnv[s.name]
		if err := setScalar(&c, f, s.value); err != nil {
			return Config{}, fmt.Errorf("environment %s: %s: %w", s.name, f.key, err)
		}
	}

	byFlag := make(map[string]field, len(fields))
	for _, f := range fields {
		byFlag[f.flag] = f
	}
	for _, s := range flagSettings {
		switch s.name {
		case configKey:
		case trunksKey:
			if err := decodeTrunks(s.value, &c); err != nil {
				return Config{}, fmt.Errorf("flag --%s: %w", s.name, err)
			}
		default:
			f := byFlag[s.name]
			if err := setScalar(&c, f, s.value); err != nil {
				return Config{}, fmt.Errorf("flag --%s: %s: %w", s.name, f.key, err)
			}
		}
	}

	c.normalize()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// LoadFile reads and validates one YAML file over the defaults (for
// `mediarelay check-config FILE`). The environment and flags play no part.
func LoadFile(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config file: %w", err)
	}
	c := Default()
	if err := decodeYAML(data, &c); err != nil {
		return Config{}, fmt.Errorf("config file %s: %w", path, err)
	}
	c.normalize()
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config file %s: %w", path, err)
	}
	return c, nil
}

// Usage writes the flag list with each key's environment variable and
// default (for `serve -h`).
func Usage(w io.Writer) {
	def := reflect.ValueOf(Default())
	fmt.Fprintf(w, "Usage: mediarelay serve [flags]\n\n")
	fmt.Fprintf(w, "Precedence: defaults < YAML file < %s* environment < flags.\n", EnvPrefix)
	fmt.Fprintf(w, "Booleans take =: --sip-echo=false. Lists are comma-separated. Durations look like 30s or 1m30s.\n\n")
	fmt.Fprintf(w, "  --%s FILE\n        YAML configuration file (env %sCONFIG)\n", configKey, EnvPrefix)
	fmt.Fprintf(w, "  --%s YAML\n        trunk list as inline YAML or JSON, replacing the file's (env %sTRUNKS)\n", trunksKey, EnvPrefix)
	sorted := append([]field(nil), fields...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].flag < sorted[j].flag })
	for _, f := range sorted {
		fmt.Fprintf(w, "  --%s %s\n        key %s, env %s", f.flag, typeName(f.typ), f.key, f.env)
		if d := formatScalar(def.FieldByIndex(f.index)); d != "" {
			fmt.Fprintf(w, " (default %s)", d)
		}
		fmt.Fprintln(w)
	}
}
