// Command coredns is CoreDNS's own server with only the plugins the test cluster's Corefile
// names, selected at compile time as CoreDNS's own plugin.cfg does: the cluster's DNS.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

func main() {
	coremain.Run()
}
