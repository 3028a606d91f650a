// Command etcd is upstream etcd's server, built from the Go module proxy: the same
// one-line main as etcd's own, so the binary behaves exactly like a release build.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
