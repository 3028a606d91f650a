// Command kstatus prints the kstatus result (sigs.k8s.io/cli-utils/pkg/kstatus/status,
// the library Flux and kpt compute health with) of each Kubernetes object in a JSON
// list read from stdin, one JSON line per object: {"name", "status", "message"}.
// Built by tools/setup/55-kstatus.sh; used by e2e/test_gitops.py.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	var objects []map[string]interface{}
	data, err := io.ReadAll(os.Stdin)
	if err == nil {
		// Kubernetes' JSON decoding: whole numbers become int64, as unstructured expects.
		err = utiljson.Unmarshal(data, &objects)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: stdin is not a JSON list of objects: %v\n", err)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	for _, obj := range objects {
		u := &unstructured.Unstructured{Object: obj}
		res, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", u.GetName(), err)
			os.Exit(1)
		}
		if err := out.Encode(result{Name: u.GetName(), Status: res.Status.String(), Message: res.Message}); err != nil {
			os.Exit(1)
		}
	}
}
