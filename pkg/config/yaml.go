package config

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// decodeYAML lays one YAML document over c. It walks the node tree itself
// rather than relying on yaml.v3's KnownFields, because yaml.v3 reports an
// unknown key as "field prot_min not found in type config.Media"; walking
// lets every error name the full key ("media.prot_min", "trunks[1].codecs")
// and its line.
func decodeYAML(data []byte, c *Config) error {
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file means all defaults
		}
		return err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return fmt.Errorf("line %d: a second YAML document; the configuration is one document", extra.Line)
	} else if !errors.Is(err, io.EOF) {
		return err
	}
	return decodeNode(&doc, reflect.ValueOf(c).Elem(), "")
}

// decodeTrunks replaces c.Trunks with the list in s, inline YAML or JSON.
func decodeTrunks(s string, c *Config) error {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(s), &doc); err != nil {
		return fmt.Errorf("%s: %w", trunksKey, err)
	}
	var trunks []Trunk
	if err := decodeNode(&doc, reflect.ValueOf(&trunks).Elem(), trunksKey); err != nil {
		return err
	}
	c.Trunks = trunks
	return nil
}

// decodeNode decodes n into v; path is the key of v, for messages.
func decodeNode(n *yaml.Node, v reflect.Value, path string) error {
	for depth := 0; n.Kind == yaml.AliasNode; depth++ {
		if n.Alias == nil || depth > 100 {
			return fmt.Errorf("%sline %d: unresolvable alias", keyPrefix(path), n.Line)
		}
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return decodeNode(n.Content[0], v, path)
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" && v.Kind() == reflect.Struct && v.Type() != durationType {
		return nil // "media:" with nothing under it keeps the defaults
	}

	switch {
	case v.Kind() == reflect.Struct && v.Type() != durationType:
		return decodeStruct(n, v, path)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s: line %d: expected a list", path, n.Line)
		}
		list := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := decodeNode(item, list.Index(i), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		v.Set(list)
		return nil
	default:
		if n.Kind == yaml.MappingNode || (n.Kind == yaml.SequenceNode && v.Kind() != reflect.Slice) {
			return fmt.Errorf("%s: line %d: expected a single value, not a %s", path, n.Line, kindName(n.Kind))
		}
		// Decode into a fresh value so a failed decode leaves v untouched.
		p := reflect.New(v.Type())
		if err := n.Decode(p.Interface()); err != nil {
			return fmt.Errorf("%s: %s", path, cleanYAMLError(err, n))
		}
		v.Set(p.Elem())
		return nil
	}
}

func decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		what := "top level"
		if path != "" {
			what = path
		}
		return fmt.Errorf("%s: line %d: expected a mapping of keys, not a %s", what, n.Line, kindName(n.Kind))
	}
	t := v.Type()
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		name := k.Value
		key := keyPrefix(path) + name
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("%sline %d: a key must be a plain name", keyPrefix(path), k.Line)
		}
		if name == "<<" {
			return fmt.Errorf("%s (line %d): YAML merge keys are not supported", key, k.Line)
		}
		if first, dup := seen[name]; dup {
			return fmt.Errorf("duplicate key %q (line %d, first at line %d)", key, k.Line, first)
		}
		seen[name] = k.Line
		idx := -1
		for j := 0; j < t.NumField(); j++ {
			if yamlName(t.Field(j)) == name {
				idx = j
				break
			}
		}
		if idx < 0 {
			return fmt.Errorf("unknown key %q (line %d)", key, k.Line)
		}
		if err := decodeNode(val, v.Field(idx), key); err != nil {
			return err
		}
	}
	return nil
}

func keyPrefix(path string) string {
	if path == "" {
		return ""
	}
	return path + "."
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "single value"
	default:
		return "YAML node"
	}
}

// cleanYAMLError turns "yaml: unmarshal errors:\n  line 4: cannot unmarshal
// !!str `abc` into int" into "line 4: "abc" is not an integer".
func cleanYAMLError(err error, n *yaml.Node) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return fmt.Sprintf("line %d: %v", n.Line, err)
	}
	msg := te.Errors[0]
	if _, rest, ok := strings.Cut(msg, "cannot unmarshal "); ok {
		// rest: "!!str `abc` into int"
		if val, typ, ok := strings.Cut(rest, " into "); ok {
			if _, lit, ok := strings.Cut(val, " "); ok {
				val = strings.Trim(lit, "`")
			}
			switch typ {
			case "time.Duration":
				typ = "a duration (e.g. 30s, 1m30s)"
			case "[]string":
				typ = "a list of strings"
			case "int":
				typ = "an integer"
			case "bool":
				typ = "a boolean (true or false)"
			default:
				typ = "a " + typ
			}
			return fmt.Sprintf("line %d: %q is not %s", n.Line, val, typ)
		}
	}
	return fmt.Sprintf("line %d: %s", n.Line, strings.TrimPrefix(msg, fmt.Sprintf("line %d: ", n.Line)))
}
