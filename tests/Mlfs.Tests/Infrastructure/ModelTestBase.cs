namespace Mlfs.Tests.Infrastructure;

/// <summary>Per-test model folder and cache directory, removed afterwards.</summary>
public abstract class ModelTestBase : IDisposable
{
    protected const int Chunk = 1 << 20;
    protected readonly DirectoryInfo _cache = Directory.CreateTempSubdirectory("mlfs-cache-");
    protected readonly TestModel _model = new();

    public void Dispose()
    {
        _model.Dispose();
        _cache.Delete(recursive: true);
        GC.SuppressFinalize(this);
    }
}
