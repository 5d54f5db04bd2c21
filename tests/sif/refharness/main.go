// A small driver for the reference SIF implementation (Debian's
// golang-github-sylabs-sif-dev), used by ocirt's tests to check that files written by
// one implementation are read, modified and verified identically by the other.
//
//	refsif list IMAGE
//	refsif kitchen OUT PARTITION_FILE    (fixed objects, then add/delete/add)
//	refsif sign IMAGE SECRET.asc         (OpenPGP, every group)
//	refsif verify IMAGE PUBLIC.asc [legacy|legacy-all]
//	refsif setprim IMAGE ID
package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/sylabs/sif/v2/pkg/integrity"
	"github.com/sylabs/sif/v2/pkg/sif"
)

func fail(err error) {
	fmt.Println("ERROR", err)
	os.Exit(1)
}

func keyring(path string) openpgp.EntityList {
	f, err := os.Open(path)
	if err != nil {
		fail(err)
	}
	defer f.Close()
	el, err := openpgp.ReadArmoredKeyRing(f)
	if err != nil {
		fail(err)
	}
	return el
}

func list(path string) {
	f, err := sif.LoadContainerFromPath(path, sif.OptLoadWithFlag(os.O_RDONLY))
	if err != nil {
		fail(err)
	}
	defer f.UnloadContainer()
	fmt.Printf("header launch=%q version=%s arch=%s id=%s created=%d modified=%d free=%d total=%d dataoff=%d datasize=%d\n",
		f.LaunchScript(), f.Version(), f.PrimaryArch(), f.ID(), f.CreatedAt().Unix(),
		f.ModifiedAt().Unix(), f.DescriptorsFree(), f.DescriptorsTotal(), f.DataOffset(), f.DataSize())
	f.WithDescriptors(func(d sif.Descriptor) bool {
		link, isGroup := d.LinkedID()
		fmt.Printf("object id=%d group=%d link=%d linkgroup=%v type=%s offset=%d size=%d name=%q",
			d.ID(), d.GroupID(), link, isGroup, d.DataType(), d.Offset(), d.Size(), d.Name())
		switch d.DataType() {
		case sif.DataPartition:
			fs, pt, arch, err := d.PartitionMetadata()
			if err != nil {
				fail(err)
			}
			fmt.Printf(" fs=%s part=%s arch=%s", fs, pt, arch)
		case sif.DataSignature:
			ht, fp, err := d.SignatureMetadata()
			if err != nil {
				fail(err)
			}
			fmt.Printf(" hash=%s entity=%X", ht, fp)
		case sif.DataCryptoMessage:
			ft, mt, err := d.CryptoMessageMetadata()
			if err != nil {
				fail(err)
			}
			fmt.Printf(" format=%s message=%s", ft, mt)
		case sif.DataSBOM:
			sf, err := d.SBOMMetadata()
			if err != nil {
				fail(err)
			}
			fmt.Printf(" sbom=%s", sf)
		}
		data, err := d.GetData()
		if err != nil {
			fail(err)
		}
		fmt.Printf(" datalen=%d\n", len(data))
		return false
	})
}

func input(t sif.DataType, data []byte, opts ...sif.DescriptorInputOpt) sif.DescriptorInput {
	di, err := sif.NewDescriptorInput(t, bytes.NewReader(data), opts...)
	if err != nil {
		fail(err)
	}
	return di
}

func kitchen(out, partFile string) {
	part, err := os.ReadFile(partFile)
	if err != nil {
		fail(err)
	}
	dis := []sif.DescriptorInput{
		input(sif.DataDeffile, []byte("Bootstrap: scratch\n")),
		input(sif.DataEnvVar, []byte("export A=1\n"), sif.OptObjectName("env.sh")),
		input(sif.DataLabels, []byte(`{"a":"b"}`), sif.OptObjectName("labels.json")),
		input(sif.DataGenericJSON, []byte(`{}`), sif.OptObjectName("data.json"), sif.OptGroupID(2)),
		input(sif.DataGeneric, []byte{1, 2, 3}, sif.OptGroupID(2), sif.OptLinkedID(1)),
		input(sif.DataCryptoMessage, []byte{0xfe, 0xfe, 0xf0, 0xf0},
			sif.OptCryptoMessageMetadata(sif.FormatPEM, sif.MessageRSAOAEP), sif.OptLinkedID(8)),
		input(sif.DataSBOM, []byte(`{"bomFormat":"CycloneDX"}`), sif.OptSBOMMetadata(sif.SBOMFormatSPDXJSON)),
		input(sif.DataPartition, part, sif.OptPartitionMetadata(sif.FsSquash, sif.PartPrimSys, "amd64")),
		input(sif.DataPartition, []byte{9, 9, 9, 9, 9}, sif.OptPartitionMetadata(sif.FsRaw, sif.PartData, "arm64"),
			sif.OptObjectName("data.raw"), sif.OptLinkedGroupID(2)),
		input(sif.DataPartition, []byte{7, 7}, sif.OptPartitionMetadata(sif.FsExt3, sif.PartSystem, "riscv64"),
			sif.OptObjectAlignment(512), sif.OptObjectTime(time.Unix(1600000000, 0))),
	}
	f, err := sif.CreateContainerAtPath(out,
		sif.OptCreateWithID("3fa85f64-5717-4562-b3fc-2c963f66afa6"),
		sif.OptCreateWithTime(time.Unix(1700000000, 0)),
		sif.OptCreateWithLaunchScript("#!/usr/bin/env run-singularity\n"),
		sif.OptCreateWithDescriptors(dis...))
	if err != nil {
		fail(err)
	}
	if err := f.AddObject(input(sif.DataGeneric, []byte("added"), sif.OptObjectName("added.bin"), sif.OptGroupID(3)),
		sif.OptAddWithTime(time.Unix(1700000100, 0))); err != nil {
		fail(err)
	}
	// One operation per load, as siftool does: 2.8.3's DeleteObject clears the slot on
	// disk but not in memory, so a later write in the same session would resurrect it.
	f = reload(f, out)
	if err := f.DeleteObject(5, sif.OptDeleteZero(true), sif.OptDeleteWithTime(time.Unix(1700000200, 0))); err != nil {
		fail(err)
	}
	f = reload(f, out)
	if err := f.AddObject(input(sif.DataGeneric, []byte("reused slot"), sif.OptGroupID(2)),
		sif.OptAddWithTime(time.Unix(1700000300, 0))); err != nil {
		fail(err)
	}
	f = reload(f, out)
	if err := f.DeleteObject(12, sif.OptDeleteWithTime(time.Unix(1700000400, 0))); err == nil {
		fail(fmt.Errorf("deleting a missing object worked"))
	}
	if err := f.DeleteObject(11, sif.OptDeleteCompact(true), sif.OptDeleteWithTime(time.Unix(1700000400, 0))); err == nil {
		fail(fmt.Errorf("compacting a non-last object worked"))
	}
	if err := f.DeleteObject(5, sif.OptDeleteCompact(true), sif.OptDeleteWithTime(time.Unix(1700000400, 0))); err != nil {
		fail(err)
	}
	if err := f.UnloadContainer(); err != nil {
		fail(err)
	}
	fmt.Println("OK")
}

func reload(f *sif.FileImage, path string) *sif.FileImage {
	if err := f.UnloadContainer(); err != nil {
		fail(err)
	}
	g, err := sif.LoadContainerFromPath(path)
	if err != nil {
		fail(err)
	}
	return g
}

func sign(path, key string) {
	f, err := sif.LoadContainerFromPath(path)
	if err != nil {
		fail(err)
	}
	defer f.UnloadContainer()
	el := keyring(key)
	s, err := integrity.NewSigner(f, integrity.OptSignWithEntity(el[0]),
		integrity.OptSignWithTime(func() time.Time { return time.Unix(1700000500, 0) }))
	if err != nil {
		fail(err)
	}
	if err := s.Sign(); err != nil {
		fail(err)
	}
	fmt.Println("OK")
}

func verify(path, key string, mode string) {
	f, err := sif.LoadContainerFromPath(path, sif.OptLoadWithFlag(os.O_RDONLY))
	if err != nil {
		fail(err)
	}
	defer f.UnloadContainer()
	opts := []integrity.VerifierOpt{integrity.OptVerifyWithKeyRing(keyring(key))}
	switch mode {
	case "legacy":
		opts = append(opts, integrity.OptVerifyLegacy())
	case "legacy-all":
		opts = append(opts, integrity.OptVerifyLegacyAll())
	}
	v, err := integrity.NewVerifier(f, opts...)
	if err != nil {
		fail(err)
	}
	if err := v.Verify(); err != nil {
		fail(err)
	}
	fmt.Println("OK")
}

func setprim(path, id string) {
	n, err := strconv.Atoi(id)
	if err != nil {
		fail(err)
	}
	f, err := sif.LoadContainerFromPath(path)
	if err != nil {
		fail(err)
	}
	defer f.UnloadContainer()
	if err := f.SetPrimPart(uint32(n), sif.OptSetWithTime(time.Unix(1700000600, 0))); err != nil {
		fail(err)
	}
	fmt.Println("OK")
}

func main() {
	args := os.Args[1:]
	if len(args) < 2 {
		fail(fmt.Errorf("usage: refsif list|kitchen|sign|verify|setprim ..."))
	}
	switch args[0] {
	case "list":
		list(args[1])
	case "kitchen":
		kitchen(args[1], args[2])
	case "sign":
		sign(args[1], args[2])
	case "verify":
		mode := ""
		if len(args) > 3 {
			mode = args[3]
		}
		verify(args[1], args[2], mode)
	case "setprim":
		setprim(args[1], args[2])
	default:
		fail(fmt.Errorf("unknown command %s", args[0]))
	}
}
