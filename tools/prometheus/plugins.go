// Prometheus's service-discovery plugin list for the test environment, put in place of the module's generated
// plugins/plugins.go at build time (GO_BUILD_PATCH in scripts/env/install.sh): the same customisation
// Prometheus documents through plugins.yml, keeping only the Kubernetes discovery prometheus-operator's
// configurations use, so the cloud providers' SDKs are not compiled. file and http stay (plugins/minimum.go).

package plugins

import (
	// Register kubernetes plugin.
	_ "github.com/prometheus/prometheus/discovery/kubernetes"
)
