package identity_test

import (
	"fmt"

	"github.com/meshguard/meshguard/internal/identity"
)

func ExampleParse() {
	id, err := identity.Parse("spiffe://cluster.local/ns/bookinfo/sa/productpage")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(id.Namespace, id.ServiceAccount)
	fmt.Println(id.Principal())
	// Output:
	// bookinfo productpage
	// cluster.local/ns/bookinfo/sa/productpage
}

func ExampleNew() {
	id, err := identity.New("cluster.local", "default", "sleep")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(id.SPIFFEID())
	_, err = identity.New("cluster.local", "default", "a/b")
	fmt.Println(err != nil)
	// Output:
	// spiffe://cluster.local/ns/default/sa/sleep
	// true
}

func ExampleParse_invalid() {
	_, err := identity.Parse("spiffe://cluster.local/workload/web")
	fmt.Println(err)
	// Output:
	// identity: SPIFFE ID "spiffe://cluster.local/workload/web": path "/workload/web" is not /ns/<namespace>/sa/<service-account>
}
