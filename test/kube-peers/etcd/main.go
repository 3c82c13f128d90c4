// Command etcd is the stock etcd server (go.etcd.io/etcd/server/v3/etcdmain),
// built here so meshvault's integration tests get a real etcd without GitHub
// release downloads or containers.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
