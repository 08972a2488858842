// decode: reads a YAML document on stdin with gopkg.in/yaml.v3 (Debian's
// golang-gopkg-yaml.v3-dev), as the Pulumi CLI reads a stack file: Unmarshal into
// interface{}. Prints one JSON line: {"error": "..."} or {"value": V}, where each
// scalar of V is tagged with its Go type ("s:", "i:", "u:", "f:", "b:", "t:", null) and a
// mapping with a non-string key is {"error": ...}, as the CLI's SimplifyMarshalledValue refuses it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

func tag(v interface{}) (interface{}, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		return "s:" + x, nil
	case int:
		return "i:" + strconv.Itoa(x), nil
	case uint64:
		return "u:" + strconv.FormatUint(x, 10), nil
	case float64:
		return "f:" + strconv.FormatFloat(x, 'g', -1, 64), nil
	case bool:
		return "b:" + strconv.FormatBool(x), nil
	case time.Time:
		return "t:" + x.Format(time.RFC3339Nano), nil
	case []interface{}:
		out := make([]interface{}, len(x))
		for i, item := range x {
			t, err := tag(item)
			if err != nil {
				return nil, err
			}
			out[i] = t
		}
		return out, nil
	case map[string]interface{}:
		out := map[string]interface{}{}
		for k, item := range x {
			t, err := tag(item)
			if err != nil {
				return nil, err
			}
			out[k] = t
		}
		return out, nil
	case map[interface{}]interface{}:
		return nil, fmt.Errorf("non-string key")
	}
	return nil, fmt.Errorf("unknown type %T", v)
}

func main() {
	data, _ := io.ReadAll(os.Stdin)
	var v interface{}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &v); err != nil {
		out["error"] = err.Error()
	} else if t, err := tag(v); err != nil {
		out["error"] = err.Error()
	} else {
		out["value"] = t
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}
