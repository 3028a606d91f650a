//go:build tools

// Package tools pins the Kubernetes commands this module builds. The build tag keeps the
// file out of every build (a main package cannot be imported); it exists so that
// `go mod tidy` records the full dependency set of these commands in go.mod/go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
