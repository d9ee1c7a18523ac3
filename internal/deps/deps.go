//go:build tools

// Package deps pins modules that code being written builds on, so go.mod
// and go.sum carry them meanwhile. An entry goes when its import is real.
package deps

import (
	_ "cloud.google.com/go/kms/apiv1"
	_ "cloud.google.com/go/kms/apiv1/kmspb"
	_ "github.com/Azure/azure-sdk-for-go/sdk/azcore"
	_ "github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	_ "github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	_ "github.com/ThalesGroup/crypto11"
	_ "github.com/aws/aws-sdk-go-v2/aws"
	_ "github.com/aws/aws-sdk-go-v2/config"
	_ "github.com/aws/aws-sdk-go-v2/credentials"
	_ "github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	_ "github.com/aws/aws-sdk-go-v2/service/kms"
	_ "github.com/aws/aws-sdk-go-v2/service/sts"
	_ "github.com/hashicorp/vault/api"
	_ "github.com/miekg/pkcs11"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/tink-crypto/tink-go-awskms/v3/integration/awskms"
	_ "github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	_ "github.com/tink-crypto/tink-go-hcvault/v2/integration/hcvault"
	_ "github.com/tink-crypto/tink-go/v2/tink"
	_ "go.etcd.io/etcd/client/v3"
	_ "go.etcd.io/etcd/client/v3/concurrency"
	_ "go.etcd.io/etcd/server/v3/embed"
	_ "google.golang.org/api/option"
)
